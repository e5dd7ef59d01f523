select
    order_date,
    count(*) as orders,
    count(*) filter (where status not in ('cancelled', 'returned')) as kept_orders,
    sum(case when status not in ('cancelled', 'returned') then total_paid else 0 end) as revenue,
    sum(case when status = 'returned' then total_paid else 0 end) as refunded
from {{ ref('order_payments') }}
group by order_date
