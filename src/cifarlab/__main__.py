from cifarlab.cli import entry

entry()
