"""The Ray pipelines (plain Ray tasks, and Ray Data where stages stream into an actor pool).
The only spoofray package besides ``training`` that imports Ray."""
