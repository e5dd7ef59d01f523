/* offshoot
description = "Customers with their first and latest order"
tags = { layer = "mart", tier = "gold", pii = "true" }
*/
SELECT c.customer_id, c.email, c.country, c.signup_date,
       min(o.order_date) AS first_order_date,
       max(o.order_date) AS latest_order_date,
       count(o.order_id) AS orders
FROM stg_customers AS c
LEFT JOIN fct_orders AS o ON o.customer_id = c.customer_id
GROUP BY c.customer_id, c.email, c.country, c.signup_date
