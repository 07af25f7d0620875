"""Benchmark of signserver: the raw PKCS#11 limit, CSC signHash, PAdES B-T, the TSA and memory.

Run ``python -m bench`` from the project root; bench/README.md explains the figures.
"""
