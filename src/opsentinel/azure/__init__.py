"""The Azure side of the Sentinel sink: the ARM template (table, DCE, DCR, role) and its CLI."""

from opsentinel.azure.template import build_template, transform_kql

__all__ = ["build_template", "transform_kql"]
