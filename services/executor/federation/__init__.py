"""The round protocol between a training step's aggregator and clients."""
