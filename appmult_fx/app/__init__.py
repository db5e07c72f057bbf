"""The application on top of the library: data sets, model zoo, training loop, workflows,
reports, the demo and the FP example. It uses the library only through ``appmult_fx``'s
public API; the CLI (``appmult_fx.cli``) calls it."""
