"""The compression engine: Tucker-2 blocks, ranks, factorization, layer policies, counting,
default DFs. Depends only on torch and tensorly (never on TotalSegmentator, nnU-Net or the
pipeline; a test keeps it so): the part another project could reuse."""
