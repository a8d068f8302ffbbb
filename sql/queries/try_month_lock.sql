SELECT pg_try_advisory_lock(%(lock_class)s, %(month_key)s)
