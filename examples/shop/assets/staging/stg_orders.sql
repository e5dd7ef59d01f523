/* offshoot
description = "Orders with typed columns and cancelled test orders removed"
tags = { layer = "staging" }
*/
SELECT
    id AS order_id,
    customer_id,
    status,
    date(ordered_at) AS order_date,
    currency
FROM raw_orders
WHERE is_test = 0
