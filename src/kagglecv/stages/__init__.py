"""One module per DVC stage, named after the stage in dvc.yaml."""
