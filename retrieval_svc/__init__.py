"""The retrieval service: candidate sources (two-tower ANN, popularity) over the Qdrant engine."""
