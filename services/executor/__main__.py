from services.executor import stop_as_suspended_on_sigterm

stop_as_suspended_on_sigterm()  # first: see its docstring

from services.executor.main import main  # noqa: E402

raise SystemExit(main())
