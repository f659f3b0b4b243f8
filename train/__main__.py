"""`python -m train --config train.yaml --data DIR --out BUNDLE`: the same as `vce-stream train`."""

from train.cli import main

if __name__ == "__main__":
    main()
