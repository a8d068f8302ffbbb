DELETE FROM crm.contact_quarantine
WHERE month = %(month)s AND source_file IN (%(source_file)s, %(legacy_name)s)
