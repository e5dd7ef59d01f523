/* offshoot
description = "Revenue per customer since signup"
tags = { layer = "mart", tier = "silver" }
*/
SELECT c.customer_id, c.country, sum(o.amount_eur) AS lifetime_value_eur
FROM dim_customers AS c
JOIN fct_orders AS o ON o.customer_id = c.customer_id
GROUP BY c.customer_id, c.country
