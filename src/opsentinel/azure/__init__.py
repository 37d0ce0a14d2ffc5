"""The Azure side of the Sentinel sink: the ARM templates (table, DCE, DCR; the Functions app) and CLI."""

from opsentinel.azure.app_template import build_function_app_template, function_app_settings
from opsentinel.azure.template import build_template, transform_kql

__all__ = ["build_function_app_template", "build_template", "function_app_settings", "transform_kql"]
