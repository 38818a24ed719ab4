"""Statistics over bars: rolling sums, pair OLS/Kalman, unit roots, symbol stats, correlation, backtest."""
