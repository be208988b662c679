"""Money: micro-dollar amounts, prices, budget periods, the budget ledger port and its SQL
implementation, and accounting."""
