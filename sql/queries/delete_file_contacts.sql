DELETE FROM crm.contacts
WHERE month = %(month)s AND source_file IN (%(source_file)s, %(legacy_name)s)
