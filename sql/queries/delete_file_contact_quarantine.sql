DELETE FROM crm.contact_quarantine WHERE month = %(month)s AND source_file = %(source_file)s
