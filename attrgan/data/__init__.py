"""Data: storage (s3 + local), Parquet manifests, image fetch/decode/crop, synthetic and converted datasets.

Nothing here imports Ray: these functions run inside Ray Data tasks and in plain tests alike.
"""
