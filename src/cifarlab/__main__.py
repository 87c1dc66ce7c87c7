from cifarlab.cli import main

raise SystemExit(main())
