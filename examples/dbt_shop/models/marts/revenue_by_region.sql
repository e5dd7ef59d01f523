select
    region,
    country_name,
    count(*) as customers,
    count(*) filter (where number_of_orders > 0) as ordering_customers,
    sum(lifetime_value) as revenue
from {{ ref('customer_orders') }}
group by region, country_name
