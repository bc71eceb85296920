from date_diffusion.cli.main import console

console()
