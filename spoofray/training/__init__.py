"""Ray Tune and Ray Train drivers. Importing this package imports no Ray; the submodules
do, when their functions run."""
