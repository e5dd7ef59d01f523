/* offshoot
description = "Revenue per day, the number finance reports"
tags = { layer = "mart", tier = "gold" }
metadata = { owner = "finance@shop.example" }
partitions = { type = "daily", start = "2024-01-01" }
*/
SELECT order_date, count(*) AS orders, sum(amount_eur) AS revenue_eur
FROM fct_orders
GROUP BY order_date
