"""The application layer: the jobs (train, finetune, sweep, recalibrate, activations, fixres)
and what runs them (options, session, training loop, run folders, reports), on top of the
method core (pipeline/) and the loaders (loaders/)."""
