/* offshoot
description = "One row per customer"
tags = { layer = "staging", pii = "true" }
*/
SELECT
    id AS customer_id,
    lower(email) AS email,
    country,
    date(created_at) AS signup_date
FROM raw_customers
