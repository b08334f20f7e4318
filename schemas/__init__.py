"""Data contracts: records, their pyarrow schemas, the array codec, the vocabulary, GLDv2 CSVs."""
