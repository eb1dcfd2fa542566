"""StyleGAN-XL networks: class-conditional generator with super-resolution stages, projected discriminator."""
