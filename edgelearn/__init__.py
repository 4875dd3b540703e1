"""The `edgelearn` command line: one entry point over inference, training, compress, federated."""
