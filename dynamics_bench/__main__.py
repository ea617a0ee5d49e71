from dynamics_bench.cli import main

main()
