"""Text for search: the lexical tokenizer + BM25 sparse vectors, the ONNX dense encoder, name matching.

Submodules are imported explicitly (`from kindred.text.tokenize import Bm25`): the encoder pulls in
onnxruntime and `tokenizers`, which a process that only tokenizes should not pay for.
"""
