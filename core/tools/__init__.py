"""Tools: the function-calling toolbox and the built-in tools."""
