"""Reports: paper-table specs (``reports/papers/<paper>.yaml``: reported numbers, protocol,
claims) and the code that regenerates them from the run index. Built by issue 5; the run
index (``runs/index.sqlite``) and every run's ``results.json`` are its inputs."""
