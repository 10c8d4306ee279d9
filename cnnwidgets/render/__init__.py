"""cnnwidgets.render."""
