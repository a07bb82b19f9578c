"""Alembic environment: migrations run on a connection pushgate hands in."""

from alembic import context

from pushgate.db.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    from pushgate.db.engine import make_engine

    connection = make_engine(config.get_main_option("sqlalchemy.url") or "").connect()

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
