"""cnnwidgets.widgets."""
