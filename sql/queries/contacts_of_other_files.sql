SELECT client_id, contact_date, channel
FROM crm.contacts
WHERE month = %(month)s AND source_file <> %(source_file)s
