"""Flower transport: a ServerApp driving the one round loop over the Grid, a ClientApp running the
client steps, and a launcher for SuperLink / SuperNode processes (``flwr`` 1.42, Message API).

Importing this package does not import ``flwr``; the modules that need it do.
"""

STATUS_FILE = "flower_run.json"   # in the server folder: how the ServerApp's run ended (read by the launcher)
