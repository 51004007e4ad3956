"""ranking_svc: Recommend = retrieve → online features → ONNX ranker → top-k, with fallbacks."""
