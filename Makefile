.PHONY: run test

# Run the server on embedded defaults (SQLite and files under ./var, no Redis) with demo users.
run:
	@bash scripts/setup.sh
	.venv/bin/telemed demo --data var
	.venv/bin/telemed serve --data var

# Run the whole test suite (installs what it needs first).
test:
	@bash scripts/setup.sh --test
	.venv/bin/pytest
