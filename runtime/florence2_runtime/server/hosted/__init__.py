"""NVIDIA's hosted Florence-2 API: its route, its answer format and the NVCF asset store."""
