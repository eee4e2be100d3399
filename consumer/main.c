/* placeholder until the consumer lands */
int main(void) { return 0; }
