"""signflow.training: the training loop, the train stage's glue, distributed training."""
