"""Flower transport: a ServerApp driving the one round loop over the Grid, a ClientApp running the
client steps, and a launcher for SuperLink / SuperNode processes (``flwr`` 1.42, Message API).

Importing this package does not import ``flwr``; the modules that need it do.
"""
