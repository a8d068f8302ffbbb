SELECT client_id, contact_date, channel, source_file, line
FROM crm.contacts
WHERE month = %(month)s AND source_file <> %(source_file)s AND source_file <> %(legacy_name)s
ORDER BY source_file, line
