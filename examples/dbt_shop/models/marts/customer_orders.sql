with customers as (
    select * from {{ ref('stg_customers') }}
),

countries as (
    select * from {{ ref('country_codes') }}
),

orders as (
    select * from {{ ref('order_payments') }}
),

customer_totals as (
    select
        customer_id,
        min(order_date) as first_order_date,
        max(order_date) as most_recent_order_date,
        count(*) as number_of_orders,
        sum(case when status not in ('cancelled', 'returned') then total_paid else 0 end) as lifetime_value
    from orders
    group by customer_id
)

select
    customers.customer_id,
    customers.first_name,
    customers.last_name,
    customers.email,
    customers.country_code,
    coalesce(countries.country_name, 'Unknown') as country_name,
    coalesce(countries.region, 'Unknown') as region,
    customers.created_at,
    customer_totals.first_order_date,
    customer_totals.most_recent_order_date,
    coalesce(customer_totals.number_of_orders, 0) as number_of_orders,
    coalesce(customer_totals.lifetime_value, 0) as lifetime_value
from customers
left join countries on countries.country_code = customers.country_code
left join customer_totals on customer_totals.customer_id = customers.customer_id
