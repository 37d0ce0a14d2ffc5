"""The Azure Functions app's own files (function_app.py, host.json): `op-sentinel azure package` puts
them at the root of the deployment zip. The logic is in opsentinel.functions."""
