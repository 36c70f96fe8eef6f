"""The pipeline's stages (worker, judge, store, retrier), each a consumer of the bus."""
