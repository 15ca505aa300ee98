"""Typer command-line interface (installed as ``fedmm.cli``; console script ``fedmm``)."""
