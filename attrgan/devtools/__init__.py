"""What the team runs around the product, not the product: `make demo` (demo.py), `make reproduce`
(reproduce.py), `make bench` (bench/), `make gpu-check` (gpu_check.py) and the local S3 server they
and the tests use (s3server.py)."""
