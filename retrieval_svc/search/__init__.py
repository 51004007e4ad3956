"""Hybrid text search over creators and posts: one qdrant-edge shard, three retrievers, fused in the engine.

    documents  Creator / Post → SearchDoc (texts for the two text retrievers, the name, the payload)
    index      the shard: dense MiniLM vector, BM25 sparse vector (engine-side IDF), name trigrams
    query      validation of a query, the prefetch + fusion request, per-retriever scores for each hit
    params     fusion weights and thresholds (defaults, or a tuned file)
    bulk       resumable bulk indexing of a catalogue, with progress

The index is one mutable shard (not versioned like the creator index): UpsertPosts / UpsertCreators
write to it and the next query sees the write; deletes likewise. Domain code only: no grpc here.
"""
