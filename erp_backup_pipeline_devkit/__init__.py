"""Development kit shared by the tests and the benchmark: throwaway servers on loopback (``servers``).

Plain Python, never imports dagster; nothing in the product (``erp_backup_pipeline``) imports it.
"""
