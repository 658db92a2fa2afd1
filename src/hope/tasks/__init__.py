"""Benchmark generators: MQAR, MAD, needle-in-a-haystack, BABILong-style, formal languages, continual learning."""
