/* offshoot
description = "Orders and revenue per customer country"
tags = { layer = "mart", tier = "silver" }
*/
SELECT c.country, count(*) AS orders, sum(o.amount_eur) AS revenue_eur
FROM fct_orders AS o
JOIN stg_customers AS c ON c.customer_id = o.customer_id
GROUP BY c.country
